"""Train & evaluate: the page (``page.py``) and one module per tab."""
