"""Figures are files: every plot in tgrpo (training curves, reward plots, experiment reports, benchmarks) is drawn
without a display, through the one helper below."""


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend, imported lazily so that importing tgrpo stays cheap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
