"""models layer: backbone registry (backbones.py), prompts and the canonical tokenisation
(prompts.py), LoRA training (lora.py). Import the submodules directly; they load torch lazily."""
