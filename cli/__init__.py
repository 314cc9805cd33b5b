"""The command line edge: the root `uapt` parser that each package's commands plug into, and the demo.

No library module imports this package.
"""
