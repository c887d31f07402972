//! Random human-readable identifiers: `<prefix>-<adjective>-<name>-<0..100000>`.

use rand::Rng;
use rand::seq::IndexedRandom;

const ADJECTIVES: &[&str] = &[
    "amber", "ancient", "autumn", "billowing", "bitter", "black", "blue", "bold", "brave", "brisk",
    "calm", "clever", "cold", "cool", "crimson", "curly", "damp", "dark", "dawn", "delicate",
    "divine", "dry", "empty", "falling", "fancy", "flat", "floral", "fragrant", "frosty", "gentle",
    "green", "hidden", "holy", "icy", "jolly", "late", "lingering", "little", "lively", "long",
    "lucky", "misty", "morning", "muddy", "nameless", "noisy", "odd", "old", "orange", "patient",
    "plain", "polished", "proud", "purple", "quiet", "rapid", "raspy", "red", "restless", "rough",
    "round", "royal", "shiny", "shrill", "shy", "silent", "small", "snowy", "soft", "solitary",
    "sparkling", "spring", "square", "steep", "still", "summer", "swift", "tight", "tiny", "twilight",
    "wandering", "weathered", "white", "wild", "winter", "wispy", "withered", "yellow", "young",
];

const NAMES: &[&str] = &[
    "albatross", "badger", "bat", "bear", "beaver", "bee", "bison", "buffalo", "camel", "cat",
    "cheetah", "cobra", "condor", "crane", "crow", "deer", "dingo", "dolphin", "dove", "eagle",
    "eel", "elk", "falcon", "ferret", "finch", "fox", "gazelle", "gecko", "gibbon", "goose",
    "gopher", "hawk", "hedgehog", "heron", "ibis", "jackal", "jaguar", "kestrel", "koala", "lark",
    "lemur", "leopard", "lion", "llama", "lynx", "magpie", "marmot", "marten", "mink", "mole",
    "moose", "narwhal", "newt", "ocelot", "octopus", "orca", "osprey", "otter", "owl", "panda",
    "panther", "parrot", "pelican", "penguin", "puffin", "puma", "quail", "rabbit", "raven", "robin",
    "salmon", "seal", "shark", "sparrow", "squid", "stork", "swan", "tapir", "tiger", "toucan",
    "trout", "turtle", "viper", "walrus", "weasel", "whale", "wolf", "wombat", "wren", "yak", "zebra",
];

pub fn random_name(prefix: &str) -> String {
    let mut rng = rand::rng();
    let adjective = ADJECTIVES.choose(&mut rng).copied().unwrap_or("brave");
    let name = NAMES.choose(&mut rng).copied().unwrap_or("otter");
    format!("{prefix}-{adjective}-{name}-{}", rng.random_range(0..100_000))
}

#[cfg(test)]
mod tests {
    #[test]
    fn has_the_documented_shape() {
        let id = super::random_name("knode");
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.len(), 4, "{id}");
        assert_eq!(parts[0], "knode");
        assert!(parts[3].parse::<u32>().unwrap() < 100_000);
    }
}
