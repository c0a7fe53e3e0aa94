"""Old import path of the figure functions, kept only while ``html_extras`` does ``getattr(plots, name)``.

The figures live in :mod:`mmdiag.report.figures`; look one up with ``figures.figure(name)``.
"""
from mmdiag.report.figures import (attention_image_svg, attention_plot, cone_plot,  # noqa: F401
                                   embedding_plot, hidden_plot, probe_plot, shift_plot, tree_svg)
