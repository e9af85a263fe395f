//! petrel-mesh: the sans-IO mesh core (membership, RTT/loss prober, load records); filled in by the mesh issue.
#![forbid(unsafe_code)]
