"""Greengrass v1 compatibility: the classifier as a Lambda function behind greengrasssdk."""
