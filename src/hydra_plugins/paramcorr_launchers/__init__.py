"""paramcorr's Hydra launchers (Hydra only instantiates launcher classes defined in
``hydra_plugins``). The code lives in :mod:`paramcorr.launchers`; ``hydra/launcher=local_gpus``
and ``slurm`` name these classes. They need the ``cluster`` extra (Hydra's joblib and submitit
launchers); without it this package offers nothing.
"""

try:
    from paramcorr import launchers as _launchers
except ImportError:  # the cluster extra is not installed
    __all__: list[str] = []
else:
    __all__ = ["LocalGpusLauncher", "SlurmLauncher"]

    class LocalGpusLauncher(_launchers.LocalGpusLauncher):
        """See :class:`paramcorr.launchers.LocalGpusLauncher`."""

    class SlurmLauncher(_launchers.SlurmLauncher):
        """See :class:`paramcorr.launchers.SlurmLauncher`."""
