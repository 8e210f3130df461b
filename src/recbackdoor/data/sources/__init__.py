"""Dataset loaders, one module per source (docs/design.md §2).

Each module has ``load(...)`` returning :class:`~.common.RawData` (raw interactions) or
:class:`~.common.LlaraData` (LLaRA's processed splits); :mod:`recbackdoor.data.prepare` turns
either into a :class:`~recbackdoor.data.types.SplitDataset`.
"""
