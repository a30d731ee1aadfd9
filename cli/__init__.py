"""The typer front end of graphcalc, installed as the `graphcalc_cli` package."""
