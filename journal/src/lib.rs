//! tally-journal: the segmented memory-mapped journal of every input Tally applies.
