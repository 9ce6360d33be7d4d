"""`fieldlens bench`: the measurements, kept out of the product's packages.

One module per part (:mod:`.edge`, :mod:`.continuous`, :mod:`.upload`, :mod:`.label`,
:mod:`.label_order`, :mod:`.retrain`), each with a ``run`` that measures and returns a typed
result and a ``report`` that prints its table; :mod:`.common` holds the figures' types and the
machine's description, :mod:`.harness` what every part that starts the components shares, and
:mod:`.runner` the parts, what each needs installed, and the one run of them that the CLI's
``bench`` command calls.

At the top of the layers, beside the CLI: it may import anything of ours, and nothing of ours
imports it but the CLI's thin ``bench`` command (``tests/test_layers.py``). Its own dependencies
are the ``bench`` extra.
"""
