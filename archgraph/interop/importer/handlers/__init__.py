"""The importer's handlers, one module per family; each registers its handlers in the table (:mod:`..table`) when
imported. :mod:`archgraph.interop.importer` imports them all, once."""
