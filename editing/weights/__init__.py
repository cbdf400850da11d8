"""The shipped trained editors: ``<edit>.safetensors`` + ``<edit>.json`` per edit (package data).

Loaded by :func:`editing.load_editor`; written by ``python -m editing.ship``.
"""
