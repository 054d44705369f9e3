"""The papers' tables: their rows and recipes (``tables``, ``paper_tables.yaml``, ``recipes/``), launching timm's
train.py on them (``launch``, ``drivers``, ``timm_repo``), reading the runs (``runs``) and the report beside the
papers' numbers (``report``). Import names from those modules."""
