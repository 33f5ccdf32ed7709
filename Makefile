# Shortcuts for course.py, which does the real work (and works without make, on
# Windows too: `python course.py grade`). Each target sets up .venv on first use.
PYTHON ?= python3
STEP ?= 01

.PHONY: grade watch test lab serve docs

grade:  ## grade your exercises: the score table, ending in "Score: X/Y"
	@$(PYTHON) course.py grade

watch:  ## grade the step you edit at every save: make watch (or make watch STEP=03)
	@$(PYTHON) course.py watch $(if $(filter command line,$(origin STEP)),$(STEP))

test:  ## the course's own checks (solutions pass, stubs fail, lessons run, lint, site)
	@$(PYTHON) course.py test

lab:  ## JupyterLab on the lessons
	@$(PYTHON) course.py lab

serve:  ## a step's solution under uvicorn: make serve STEP=01
	@$(PYTHON) course.py serve $(STEP)

docs:  ## the course website on http://127.0.0.1:8000
	@$(PYTHON) course.py docs
