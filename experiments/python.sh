# Sourced by the experiment scripts: the Python that runs fedrdskd.
# $PYTHON if set, else the repository's .venv (./run.sh setup), else python3 on PATH.
repository="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$repository/.venv/bin/python" ]; then
    PYTHON="$repository/.venv/bin/python"
  else
    PYTHON=python3
  fi
fi
