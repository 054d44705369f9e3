"""Hugging Face Hub folders from train.py checkpoints: reading checkpoints (``checkpoints``), class names
(``label_names``), repo names (``naming``), model cards (``card_format``: MODEL_CARDS.md; ``cards``: the Hub README),
writing and uploading the folder (``publish``). Import names from those modules."""
