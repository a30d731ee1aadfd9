"""What a user reads: the report as a table, Markdown, CSV, HTML or JSON (`formatting`), the
annotated layer graph (`render`), one layer's ops (`render_ops`), the timeline and fit charts
(`plots`), the predicted step as a PyTorch memory snapshot and a real snapshot lined up with it
(`snapshot`, `snapshot_compare`).

May import: the shared modules and the stages before it (up to graphcalc.ranks). Not the commands.
"""
