#!/usr/bin/env bash
# tuning world (seed 100): vanilla 130 pretraining epochs, the perceiver 400; every row; then the probe
# (exp2.py and probe.py are ../../2026-12-06_demo/tuning/'s, run from a scratch folder holding copies)
cd /tmp/demo && . /work/main/.venv/bin/activate
/usr/bin/time -f "%e s wall" python exp2.py 'run("v130p400", rows=("baseline","vanilla_nopretrain","vanilla_pretrain","perceiver_pretrain"), pre_max_epochs=130, pre_final_epochs=130, pre_perceiver_epochs=400)'
python probe.py runs/v130p400_s100
