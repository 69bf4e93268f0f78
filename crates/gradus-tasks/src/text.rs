//! Templated English: simple sentences from small word lists, and facts about a fixed invented world.
//!
//! The world ([`World::get`]) is drawn once from a constant seed, the same for every corpus, so its
//! facts ("The capital of Zorland is Quib.") are a fixed body of knowledge a model can learn in
//! pretraining and be asked about in the instruction task.

use std::collections::HashSet;
use std::sync::OnceLock;

use gradus_tensor::rng::Rng;

/// The seed of the one world every corpus talks about. Changing it changes every fact.
pub const WORLD_SEED: u64 = 0x5EED_0FDA7A;
/// Number of countries in the world.
pub const N_COUNTRIES: usize = 24;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Country {
    pub name: String,
    pub capital: String,
    pub language: String,
    pub river: String,
    pub export: String,
}

/// A relation of a country that can be stated and asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Relation {
    Capital,
    Language,
    River,
    Export,
}

impl Relation {
    pub const ALL: [Relation; 4] = [
        Relation::Capital,
        Relation::Language,
        Relation::River,
        Relation::Export,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Relation::Capital => "capital",
            Relation::Language => "language",
            Relation::River => "river",
            Relation::Export => "export",
        }
    }
}

/// One fact: a country, a relation, and statements/questions about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact<'w> {
    pub country: &'w Country,
    pub relation: Relation,
}

impl Fact<'_> {
    /// A stable key naming the fact (used to split instruction data).
    pub fn key(&self) -> String {
        format!("fact:{}:{}", self.relation.name(), self.country.name)
    }

    /// A sentence stating the fact; `variant` picks one of two phrasings.
    pub fn statement(&self, variant: usize) -> String {
        let c = self.country;
        match (self.relation, variant % 2) {
            (Relation::Capital, 0) => format!("The capital of {} is {}.", c.name, c.capital),
            (Relation::Capital, _) => format!("{} is the capital of {}.", c.capital, c.name),
            (Relation::Language, 0) => format!("People in {} speak {}.", c.name, c.language),
            (Relation::Language, _) => format!("{} is spoken in {}.", c.language, c.name),
            (Relation::River, 0) => format!("The {} river flows through {}.", c.river, c.name),
            (Relation::River, _) => format!("{} is crossed by the {} river.", c.name, c.river),
            (Relation::Export, 0) => format!("{} is known for its {}.", c.name, c.export),
            (Relation::Export, _) => format!("{} sells {} to its neighbours.", c.name, c.export),
        }
    }

    /// A question whose answer is [`Fact::answer`].
    pub fn question(&self) -> String {
        let c = self.country;
        match self.relation {
            Relation::Capital => format!("What is the capital of {}?", c.name),
            Relation::Language => format!("What language do people in {} speak?", c.name),
            Relation::River => format!("Which country does the {} river flow through?", c.river),
            Relation::Export => format!("What is {} known for?", c.name),
        }
    }

    pub fn answer(&self) -> String {
        let c = self.country;
        match self.relation {
            Relation::Capital => c.capital.clone(),
            Relation::Language => c.language.clone(),
            Relation::River => c.name.clone(),
            Relation::Export => c.export.clone(),
        }
    }
}

/// The invented world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    pub countries: Vec<Country>,
}

const ONSETS: &[&str] = &[
    "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "tr",
    "qu", "sh",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou"];
const CODAS: &[&str] = &["", "", "b", "n", "r", "x", "th", "l"];
const COUNTRY_SUFFIXES: &[&str] = &["land", "ia", "stan", "mark", "ora"];
const LANGUAGE_SUFFIXES: &[&str] = &["ish", "ese", "ic", "an"];
const EXPORTS: &[&str] = &[
    "copper", "salt", "tea", "wool", "glass", "honey", "silk", "timber", "rice", "cheese", "paper",
    "spices",
];

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn pick<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.below(xs.len())]
}

/// One or two syllables and an optional final consonant: "zor", "quib", "drai".
fn root(rng: &mut Rng) -> String {
    let syllables = 1 + rng.below(2);
    let mut s = String::new();
    for _ in 0..syllables {
        s.push_str(pick(rng, ONSETS));
        s.push_str(pick(rng, VOWELS));
    }
    s.push_str(pick(rng, CODAS));
    s
}

impl World {
    /// Build the world from `seed` (the corpus always uses [`WORLD_SEED`] via [`World::get`]). All
    /// names are distinct. (For absurd sizes beyond the name space, fewer countries come back.)
    pub fn generate(seed: u64, n_countries: usize) -> World {
        let mut rng = Rng::derive(seed, "gradus-data/world");
        // Every name in the world is distinct (country, language, capital, river alike).
        let mut used: HashSet<String> = HashSet::new();
        let mut countries = Vec::with_capacity(n_countries);
        // The name space holds tens of thousands of countries; the attempt bound only guards absurd sizes.
        let mut attempts = 0usize;
        while countries.len() < n_countries && attempts < 1000 + 100 * n_countries {
            attempts += 1;
            let base = root(&mut rng);
            let name = capitalize(&format!("{base}{}", pick(&mut rng, COUNTRY_SUFFIXES)));
            let language = capitalize(&format!("{base}{}", pick(&mut rng, LANGUAGE_SUFFIXES)));
            let capital = capitalize(&root(&mut rng));
            let river = capitalize(&format!("{}a", root(&mut rng)));
            let export = pick(&mut rng, EXPORTS).to_string();
            let names = [&base, &name, &language, &capital, &river];
            let distinct: HashSet<&String> = names.iter().copied().collect();
            let too_short = capital.len() < 3 || river.len() < 4;
            if too_short
                || distinct.len() < names.len()
                || names.iter().any(|n| used.contains(n.as_str()))
            {
                continue;
            }
            used.extend(names.iter().map(|n| n.to_string()));
            countries.push(Country {
                name,
                capital,
                language,
                river,
                export,
            });
        }
        World { countries }
    }

    /// The world every corpus uses: [`WORLD_SEED`], [`N_COUNTRIES`] countries.
    pub fn get() -> &'static World {
        static WORLD: OnceLock<World> = OnceLock::new();
        WORLD.get_or_init(|| World::generate(WORLD_SEED, N_COUNTRIES))
    }

    /// Every fact, country by country.
    pub fn facts(&self) -> Vec<Fact<'_>> {
        self.countries
            .iter()
            .flat_map(|country| {
                Relation::ALL
                    .iter()
                    .map(move |&relation| Fact { country, relation })
            })
            .collect()
    }

    /// A uniformly drawn fact.
    pub fn random_fact(&self, rng: &mut Rng) -> Fact<'_> {
        let country = &self.countries[rng.below(self.countries.len())];
        let relation = Relation::ALL[rng.below(Relation::ALL.len())];
        Fact { country, relation }
    }
}

const ADJECTIVES: &[&str] = &[
    "red", "small", "big", "old", "quick", "quiet", "happy", "green", "brown", "tall", "young",
    "lazy",
];
/// (singular, plural)
const ANIMALS: &[(&str, &str)] = &[
    ("fox", "foxes"),
    ("bird", "birds"),
    ("dog", "dogs"),
    ("cat", "cats"),
    ("horse", "horses"),
    ("frog", "frogs"),
    ("owl", "owls"),
    ("rabbit", "rabbits"),
    ("bear", "bears"),
    ("fish", "fish"),
    ("mouse", "mice"),
    ("goat", "goats"),
];
const VERBS: &[&str] = &[
    "sees", "chases", "follows", "finds", "watches", "helps", "meets", "hears",
];
const PLACES: &[&str] = &[
    "river", "hill", "forest", "lake", "house", "bridge", "road", "garden", "field", "village",
];
const PREPOSITIONS: &[&str] = &["near", "by", "behind", "beside"];
const PEOPLE: &[&str] = &["Mira", "Tom", "Ana", "Leo", "Sam", "Ivy", "Ben", "Zoe"];
const NUMBERS: &[&str] = &[
    "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// One sentence from the templates.
pub fn sentence(rng: &mut Rng) -> String {
    let adj = pick(rng, ADJECTIVES);
    let (animal, _) = ANIMALS[rng.below(ANIMALS.len())];
    let place = pick(rng, PLACES);
    let prep = pick(rng, PREPOSITIONS);
    match rng.below(5) {
        0 => {
            let verb = pick(rng, VERBS);
            let adj2 = pick(rng, ADJECTIVES);
            let (animal2, _) = ANIMALS[rng.below(ANIMALS.len())];
            format!(
                "The {adj} {animal} {verb} {} {adj2} {animal2} {prep} the {place}.",
                article(adj2)
            )
        }
        1 => format!(
            "{} {adj} {animal} lives {prep} the {place}.",
            capitalize(article(adj))
        ),
        2 => format!("The {animal} is {adj}."),
        3 => format!("Every morning the {adj} {animal} walks to the {place}."),
        _ => {
            let person = pick(rng, PEOPLE);
            let (_, plural) = ANIMALS[rng.below(ANIMALS.len())];
            format!("{person} has {} {plural}.", pick(rng, NUMBERS))
        }
    }
}

/// Probability that a sentence of a [`paragraph`] is a world fact.
pub const FACT_SHARE: f64 = 0.4;

/// A short paragraph: 2 to 5 sentences, each a world fact with probability [`FACT_SHARE`], else a
/// template sentence.
pub fn paragraph(rng: &mut Rng) -> String {
    paragraph_with(rng, FACT_SHARE)
}

/// [`paragraph`] with each sentence a world fact with probability `fact_share`.
pub fn paragraph_with(rng: &mut Rng, fact_share: f64) -> String {
    let world = World::get();
    let n = 2 + rng.below(4);
    let mut parts = Vec::with_capacity(n);
    for _ in 0..n {
        if rng.uniform() < fact_share {
            let fact = world.random_fact(rng);
            parts.push(fact.statement(rng.below(2)));
        } else {
            parts.push(sentence(rng));
        }
    }
    parts.join(" ")
}
