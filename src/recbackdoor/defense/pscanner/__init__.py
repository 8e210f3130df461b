"""P-Scanner: an LLM poison scanner for item titles (docs/design.md §5).

- ``PScanner``: the Detector around a trained scanner (per-title Yes/No LLM score + optional
  cross-title evidence); ``CatalogTrainedScanner`` trains one on the catalog it is fitted to.
- ``train_scanner(titles, domain, config, out)``: synthetic triggers (agent + rules),
  supervised + DPO training, adversarial rounds, threshold calibration.
- ``load_scanner(dir)``, ``scan_catalog(catalog, out, ...)``.
"""

from .catalog_io import read_catalog, scan_catalog, write_flagged
from .scanner import PScanner, load_scanner, scanner_prompt
from .train import CatalogTrainedScanner, ScannerConfig, train_scanner

__all__ = [
    "CatalogTrainedScanner",
    "PScanner",
    "ScannerConfig",
    "load_scanner",
    "read_catalog",
    "scan_catalog",
    "scanner_prompt",
    "train_scanner",
    "write_flagged",
]
