"""Write an experiment's params file: this repository's params.yaml, tracking off, then Python
statements run on ``p`` (the params dict), e.g. ``"p['train_pengi'].update(lr=1e-3)"``.

    python bench/learning/make_params.py OUT.yaml "STATEMENTS" [...]

Used by run_clap.sh and run_pengi.sh; later statements run after earlier ones.
"""

import sys

import yaml

with open("params.yaml") as f:
    p = yaml.safe_load(f)
p["tracking"]["enabled"] = False
for statements in sys.argv[2:]:
    exec(statements)  # noqa: S102 - the experiment's override, typed by whoever runs it
with open(sys.argv[1], "w") as f:
    yaml.safe_dump(p, f)
