# Environment defaults for every AtPatch command (sourced by the Makefile and scripts/setup.sh).
# Source from the repository root. The values live in src/atpatch/conventions.py (one place); values
# already set in the caller's environment win.
_atpatch_root="${ATPATCH_ROOT:-$PWD}"
eval "$(python3 "$_atpatch_root/src/atpatch/conventions.py" shell "$_atpatch_root")"
unset _atpatch_root
