"""`mesh-t5 demo`: the T5 recipe, offline on a CPU, on the Python standard library's docstrings.

command (the steps and `main`), run (a run's settings and directory), corpus (docstrings cleaned
like C4, the derived task files), tasks (their registration, over a run's data directory bound in
gin), evaluate (test scores, baselines, samples), report (the PNG and markdown report).
"""
