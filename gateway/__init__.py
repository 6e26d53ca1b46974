"""DICOMweb gateway: QIDO-RS, WADO-RS, STOW-RS and WADO-URI in front of DIMSE PACS."""

__version__ = "0.1.0"
