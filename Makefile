# The two commands of the README: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean sandbox browser

# Every turn runs in bubblewrap (supervisor/sandbox.py): installed from Debian when missing and
# this is root; otherwise a line says what to install (supervisors refuse to run turns without it).
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null; \
	  else echo "bubblewrap (bwrap) is missing: install it, e.g. sudo apt-get install bubblewrap" >&2; fi; }

# The console's browser tests (tests/browser) drive Debian's chromium through Playwright by its
# executable path (Playwright's own browser download is not used): installed from Debian when
# missing and this is root; otherwise a line says what to install (those tests then skip).
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null; \
	  else echo "chromium is missing: install it, e.g. sudo apt-get install chromium (the browser tests skip without it)" >&2; fi; }

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed sandbox
	$(BIN)/chatbox demo

test: $(BIN)/.installed sandbox browser
	$(BIN)/python -m pytest

bench: $(BIN)/.installed sandbox
	$(BIN)/python bench/post_throughput.py
	$(BIN)/python bench/dispatch.py all
	$(BIN)/python bench/mcp_start.py

clean:
	rm -rf $(VENV) build *.egg-info
