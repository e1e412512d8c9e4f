# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DATASET := ../shared/datasets/flipkart-1050
RETAIL := ../shared/datasets/online-retail
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# The demo shows the neighbours of a watch (any product when there is none).
export PICK_EXAMPLE := from catalog.models import Product as P; \
	p = P.objects.filter(category__parent__parent__name='Watches').first() or P.objects.first(); print(p.sku)

.PHONY: venv demo test lint typecheck bench evaluate clean

$(VENV)/.installed: requirements/base.txt requirements/dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements/dev.txt
	touch $@

venv: $(VENV)/.installed

# The demo is local development: DEBUG on, a dev-only secret key (config/settings.py).
demo: export DJANGO_DEBUG := 1
demo: venv
	$(PY) manage.py migrate --noinput
	@if [ -f $(DATASET)/catalog.csv ]; then \
		$(PY) manage.py import_catalog $(DATASET)/catalog.csv; \
	else \
		$(PY) manage.py generate_demo_catalog var/demo-catalog && \
		$(PY) manage.py import_catalog var/demo-catalog/catalog.csv; \
	fi
	@# import_catalog indexed each batch after its commit; --pending picks up anything left over
	$(PY) manage.py similarity_reindex --pending
	@# the staff tools' review queue (docs/staff-tools.md): Admin > Similarity > Duplicate candidates
	$(PY) manage.py similarity_duplicates --queue --json var/duplicates.json
	$(PY) manage.py similar "$$($(PY) manage.py shell -v 0 -c "$$PICK_EXAMPLE")" --limit 5
	@# behaviour (docs/behaviour.md): real baskets of online-retail, so "bought together" shows
	@# real complements; import_events and import_catalog skip what is already there
	@if [ -f $(RETAIL)/transactions.csv ]; then \
		$(PY) manage.py import_catalog $(RETAIL)/catalog.csv && \
		$(PY) manage.py similarity_reindex --pending && \
		$(PY) manage.py import_events $(RETAIL)/transactions.csv --columns order=invoice,visitor=customer,price=unit_price && \
		$(PY) manage.py similarity_train --behaviour; \
	fi
	$(PY) manage.py ensure_demo_admin
	$(PY) manage.py runserver 127.0.0.1:8000

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy similarity workers

bench: venv
	$(PY) -m bench

clean:
	rm -rf var .pytest_cache
