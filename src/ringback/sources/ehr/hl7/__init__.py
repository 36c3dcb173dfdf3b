"""The HL7 v2 feed: SIU and ADT messages over MLLP become patient and appointment records (docs/ehr-hl7.md)."""
