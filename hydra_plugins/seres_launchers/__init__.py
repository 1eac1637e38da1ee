"""seres's Hydra launchers. Hydra accepts launchers only from the `hydra_plugins` namespace package, and
imports every module here at start-up: keep them light, importing the rest when a sweep is launched."""
