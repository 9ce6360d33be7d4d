"""The local inference service's wire protocol and its client (``invoke_inference``)."""
