# Makes `prewarm_client` importable when the tests run from a checkout
# (`python3 -m pytest clients/python`) without installing the package.
