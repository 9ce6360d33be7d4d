"""The field-data side of fieldlens: which images to keep, keeping them safely, shipping them to S3.

Device-side code (the sampling policy, the local store, the upload queue) lives here and is
packaged with the classifier and uploader components.
"""
