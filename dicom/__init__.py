"""The DICOM node (C-STORE/FIND/MOVE/GET, worklist, DICOMweb). Not built yet: see issues 4 and 5."""
