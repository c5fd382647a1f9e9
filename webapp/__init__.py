"""The local web page of ``app.py``: draw or upload a defect mask, generate, keep the pairs."""
