"""Sphinx configuration of the read-along book. tools/build_book.py stages the executed
notebooks, the README's sections and MathJax beside this file and runs Sphinx on them; nothing
here reaches the network, at build time or when the site is read."""
project = "preimage"
author = "the preimage authors"
copyright = "the preimage authors; the paper: A. Mahendran and A. Vedaldi"
html_title = "Inverting deep image representations: a read-along book"

extensions = ["myst_nb"]
nb_execution_mode = "off"  # the chapters arrive executed (make figures, or the test suite's run)
nb_ipywidgets_js = {}  # the explorer's widgets need a kernel; no widget manager from a CDN
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_theme_options = {"home_page_in_toc": True, "show_toc_level": 2, "use_download_button": True}
html_show_sourcelink = False
html_context = {"default_mode": "light"}  # the theme logs an error for the empty default
html_favicon = "_static/favicon.png"  # without one, every browser asks for /favicon.ico and gets a 404

# MathJax 2 from the jupyter-server-mathjax package, served by the site itself (staged into
# _static/mathjax); it ships the STIX web fonts only, so those are the ones to use.
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
myst_update_mathjax = False  # MyST's update is written for MathJax 3's options
mathjax2_config = {
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]], "processEscapes": True,
                "processEnvironments": True, "ignoreClass": "document",
                "processClass": "math|output_area|tex2jax_process"},
    # MathJax measures with a blank font at url('about:blank'), which Chromium refuses (a console
    # error); a local() source measures the same way
    "HTML-CSS": {"availableFonts": ["STIX-Web"], "preferredFont": "STIX-Web", "webFont": "STIX-Web",
                 "imageFont": None, "styles": {"@font-face": {"font-family": "MathJax_Blank",
                                                               "src": "local('MathJax_Blank')"}}},
    "messageStyle": "none",
}
