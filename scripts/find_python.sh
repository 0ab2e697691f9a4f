#!/usr/bin/env bash
# Prints the first Python the lock supports (3.11 or 3.12: jaxlib 0.4.26 has wheels for no
# other), trying python3.11, python3.12, then python3. A name that exists but does not run
# (e.g. a pyenv shim for a version that is not active) is skipped. Exits 2 with one line when
# there is none.
for candidate in python3.11 python3.12 python3; do
  if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' \
      >/dev/null 2>&1; then
    echo "$candidate"
    exit 0
  fi
done
echo "error: make setup needs Python 3.11 or 3.12 (jaxlib 0.4.26 has wheels for no other);" \
  "install one, or pass PYTHON=/path/to/python3.12" >&2
exit 2
