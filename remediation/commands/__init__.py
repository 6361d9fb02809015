"""Command functions beside the workflow's (`pipeline.py`): the bundled S1SP simulator and key making. The CLI parses
options, calls one of these and renders what it returns; these wire the lower layers together and print nothing."""
