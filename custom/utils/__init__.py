from .bundle import bundle_overrides, bundle_run_command, run_bundle_logged
from .errors import UserInputError, run_or_exit
from .io import OutputOverlapsInputError, atomic_path, check_distinct_from_inputs, check_output_path
from .overrides import BundleOverrideError, check_bundle_overrides, exit_on_error
from .provenance import git_commit

__all__ = ["BundleOverrideError", "OutputOverlapsInputError", "check_bundle_overrides", "atomic_path", "check_distinct_from_inputs", "bundle_overrides", "bundle_run_command", "check_output_path", "exit_on_error", "git_commit", "run_bundle_logged", "run_or_exit", "UserInputError"]
