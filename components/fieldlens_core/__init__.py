"""Shared core of the fieldlens components.

Every component imports its contracts from here: messages, topics, errors, configuration
pieces, the model and its package, and the bus / camera / inference-client interfaces with
their implementations (the field store is the field-data package's, ``fieldlens_fielddata``).
Nothing in this package builds a real adapter on import; each component's ``main.py`` does the
wiring.
"""

__version__ = "0.1.0"
