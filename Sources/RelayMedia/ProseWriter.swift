/// Fills sentence templates with the prompt's topic words and a small vocabulary.
struct ProseWriter {
    private var random: SeededGenerator
    private let topics: [String]
    private var nextTopic = 0

    init(prompt: String, seed: UInt64) {
        random = SeededGenerator(seed: StableHash.hash(prompt, seed: seed ^ 0x5445_5854))
        var seen: Set<String> = []
        var topics: [String] = []
        let words = prompt.split { !($0.isLetter || $0.isNumber || $0 == "'" || $0 == "-") }
        for (index, word) in words.enumerated() {
            let lower = word.lowercased()
            guard !Self.stopWords.contains(lower), lower.count > 1 || lower.first?.isNumber == true,
                seen.insert(lower).inserted
            else { continue }
            // Keep capitals for names mid-prompt ("Swift", "Paris"); otherwise lower-case.
            let keepCase = index > 0 && word.first?.isUppercase == true
            topics.append(keepCase ? String(word) : lower)
            if topics.count == 8 { break }
        }
        if topics.isEmpty {
            topics = [["question", "idea", "story", "moment"][Int(seed % 4)]]
        }
        self.topics = topics
    }

    mutating func write(maxTokens: Int) -> [String] {
        var tokens: [String] = []
        let sentences = random.integer(4...9)
        var inParagraph = 0
        var paragraphLength = random.integer(2...4)
        for index in 0..<sentences {
            if index > 0 {
                if inParagraph == paragraphLength {
                    tokens.append("\n\n")
                    inParagraph = 0
                    paragraphLength = random.integer(2...4)
                } else {
                    tokens.append(" ")
                }
            }
            let template = index == 0 ? random.pick(Self.openings) : random.pick(Self.templates)
            tokens += sentence(from: template)
            inParagraph += 1
            if tokens.count >= maxTokens { break }
        }
        return Array(tokens.prefix(maxTokens))
    }

    private mutating func topic() -> String {
        defer { nextTopic += 1 }
        return topics[nextTopic % topics.count]
    }

    /// Expands `{slot}`s, then fixes articles and the leading capital.
    private mutating func sentence(from template: String) -> [String] {
        var text = ""
        var slot: String?
        for character in template {
            if character == "{" {
                slot = ""
            } else if character == "}", let name = slot {
                text += fill(name)
                slot = nil
            } else if slot != nil {
                slot?.append(character)
            } else {
                text.append(character)
            }
        }
        var tokens = SyntheticText.tokenize(text)
        for index in tokens.indices where tokens[index] == "a" || tokens[index] == "A" {
            if index + 2 < tokens.count, let next = tokens[index + 2].first,
                "aeiouAEIOU".contains(next)
            {
                tokens[index] += "n"
            }
        }
        if let first = tokens.first, let letter = first.first, letter.isLowercase {
            tokens[0] = letter.uppercased() + first.dropFirst()
        }
        return tokens
    }

    private mutating func fill(_ slot: String) -> String {
        switch slot {
        case "T": return topic()
        case "N": return random.pick(Self.nouns)
        case "A": return random.pick(Self.adjectives)
        case "V": return random.pick(Self.verbs)
        case "B": return random.pick(Self.baseVerbs)
        case "D": return random.pick(Self.adverbs)
        case "P": return random.pick(Self.prepositions)
        case "C": return random.pick(Self.connectives)
        default: return slot
        }
    }

    private static let openings = [
        "Let's think about {T} for a moment.",
        "Here is a short reflection on {T} and {T}.",
        "{T} is a {A} place to start.",
        "You asked about {T}, so let's begin there.",
        "When people talk about {T}, they usually mean something {A}.",
    ]

    private static let templates = [
        "The {T} {V} the {N} {D}.",
        "{C} the {T} {V} a {A} {N} {P} the {N}.",
        "There is something {A} about {T}, a kind of {N} that {V} the {N}.",
        "When you look at {T}, the {N} {V} {D}.",
        "A {A} {T} {V} more than it first seems.",
        "{T} and {T} are closer than they look: each one {V} the other.",
        "Consider the {N} {P} the {T}; it {V} what matters.",
        "Perhaps the most {A} part of {T} is how it {V} the {N}.",
        "It is {D} true that {T} {V} the {N}.",
        "{C} the {T} {V} {P} the {A} {N}, and the {N} {V} {D}.",
        "Some say the {T} {V} the {N}, while others would rather {B} it.",
        "In the end, {T} is about {N}, {N}, and a {A} sense of {N}.",
        "Why does the {T} {B} the {N} so {D}?",
        "{C} you can {B} the {T} and still {B} the {N}.",
    ]

    private static let nouns = [
        "light", "shore", "moment", "pattern", "question", "story", "detail", "season", "horizon",
        "memory", "signal", "journey", "balance", "shape", "rhythm", "silence", "edge", "distance",
        "surface", "idea", "path", "structure", "window", "thread", "voice", "harbor", "evening",
        "field", "corner", "weather", "tide", "color",
    ]
    private static let adjectives = [
        "quiet", "bright", "steady", "distant", "gentle", "curious", "familiar", "simple", "careful",
        "warm", "open", "subtle", "remarkable", "patient", "vivid", "small", "clear", "deep", "calm",
        "restless", "honest", "unexpected", "easy", "old",
    ]
    private static let verbs = [
        "holds", "carries", "reflects", "shapes", "reveals", "follows", "changes", "suggests",
        "invites", "echoes", "frames", "softens", "connects", "remembers", "guides", "balances",
        "answers", "gathers", "outlasts", "illuminates",
    ]
    private static let baseVerbs = [
        "hold", "carry", "question", "shape", "follow", "change", "notice", "frame", "soften",
        "remember", "explain", "revisit", "measure", "admire",
    ]
    private static let adverbs = [
        "slowly", "quietly", "clearly", "gently", "often", "always", "steadily", "naturally",
        "simply", "rarely", "patiently", "almost without effort",
    ]
    private static let prepositions = [
        "toward", "beneath", "beside", "across", "beyond", "within", "around", "against", "along",
    ]
    private static let connectives = [
        "At first,", "Over time,", "Even so,", "Of course,", "In a sense,", "Seen up close,",
        "Still,", "Sometimes", "Later,", "Meanwhile,",
    ]

    private static let stopWords: Set<String> = [
        "a", "an", "the", "of", "in", "on", "at", "to", "for", "and", "or", "but", "is", "are",
        "was", "were", "be", "been", "am", "it", "its", "it's", "this", "that", "these", "those",
        "with", "without", "about", "from", "by", "as", "into", "me", "my", "i", "you", "your",
        "we", "our", "us", "they", "them", "he", "she", "his", "her", "please", "write", "tell",
        "give", "make", "create", "generate", "show", "explain", "describe", "what", "how", "why",
        "who", "when", "where", "which", "can", "could", "would", "should", "will", "do", "does",
        "did", "some", "any", "very", "so", "just", "like", "than", "then", "there", "here",
        "not", "no", "yes", "if", "up", "out", "over", "under", "also", "more", "most", "much",
        "many", "short", "brief", "story", "poem", "essay", "paragraph", "summary", "text",
    ]
}
