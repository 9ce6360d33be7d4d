"""`fieldlens label serve`: a page where a person labels what the devices kept.

:mod:`.index` orders the images, :mod:`.thumbnails` caches small copies, :mod:`.security`
guards the HTTP surface, :mod:`.app` is the Starlette application and :mod:`.serve` runs it
under uvicorn. Labels are written through the field-data directory's one owner,
:class:`fieldlens_fielddata.directory.FieldDataDir`.
"""
