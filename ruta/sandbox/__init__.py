"""A whole Ruta instance on loopback, as real processes: ``ruta sandbox up|down``.

The sandbox drives every part only through its command line and its wire protocols (it imports no
part), so it exercises exactly what an operator runs.
"""
