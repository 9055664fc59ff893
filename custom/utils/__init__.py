from .bundle import bundle_run_command
from .io import atomic_path, check_output_path

__all__ = ["atomic_path", "bundle_run_command", "check_output_path"]
