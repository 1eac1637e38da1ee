"""Using trained models and finished runs.

* :mod:`~seres.results.evaluation`: what eval.py runs once Hydra has composed its config.
* :mod:`~seres.results.predict`: a trained model loaded from a run (``python -m seres.results.predict``).
* :mod:`~seres.results.export`: TorchScript and ONNX files of it (``python -m seres.results.export``).
* :mod:`~seres.results.shift`: accuracy on the shift test sets CIFAR-10.1 and CIFAR-10-C (eval.py).
* :mod:`~seres.results.runs_table`: a markdown table of finished runs from their own files
  (``python -m seres.results.runs_table DIR...``).

May import every other package of seres; nothing in them imports it.
"""
