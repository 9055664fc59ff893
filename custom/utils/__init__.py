from .bundle import bundle_overrides, bundle_run_command, run_bundle_logged
from .io import atomic_path, check_output_path
from .provenance import git_commit

__all__ = ["atomic_path", "bundle_overrides", "bundle_run_command", "check_output_path", "git_commit", "run_bundle_logged"]
