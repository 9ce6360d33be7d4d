"""Sample data from packages, for the demos, the bench and the tests: never needed on a device or to retrain.

scikit-image's bundled photos (:mod:`.photos`) and Debian's Fashion-MNIST rendered as field photos
(:mod:`.fashion`). Nothing here downloads anything.
"""
