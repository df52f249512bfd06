"""Collection: which namespaces to read (patterns, globs), one target per
namespace (backend handle lifecycle, port map), collected in parallel under
a scrape deadline into CollectResults."""
