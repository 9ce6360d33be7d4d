"""Shared core of the fieldlens components.

Every component imports its contracts from here: messages, topics, errors, configuration
pieces, and the bus / camera / inference-client / field-store interfaces with their
implementations. Nothing in this package builds a real adapter on import; each
component's ``main.py`` does the wiring.
"""

__version__ = "0.1.0"
