"""The field-data uploader component: ships kept field images to S3 (or a stand-in directory)."""
