"""The two demos: :mod:`.main` (``rankrl demo``, learn a rank policy and compare it with the baselines) and
:mod:`.resize` (``rankrl resize-demo``, live rank reallocation and the memory it frees).

Nothing is imported here, so that loading one demo does not load the other.
"""
