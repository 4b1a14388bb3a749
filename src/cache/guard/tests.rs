use super::*;

/// As proposed by the index at a similarity just short of the one at
/// which word changes stop counting.
/// The first guard to object to a pair just under `close_enough` (the
/// guards' own order, whatever the bars).
fn close(asked: &str, cached: &str) -> Option<Refusal> {
    objections(asked, cached).first().copied()
}

/// Every guard that objects to a pair just under `close_enough`.
fn objections(asked: &str, cached: &str) -> Vec<Refusal> {
    let tuning = Tuning::CHOSEN;
    refusals(asked, cached, tuning.close_enough - 0.01, tuning)
}

#[test]
fn wordnet_and_word_level_guards_refuse_the_hard_kinds() {
    for (a, b, why) in [
        (
            "How do I make my repository public?",
            "How do I make my repository private?",
            Refusal::Opposites,
        ),
        (
            "Sort the list in ascending order",
            "Sort the list in descending order",
            Refusal::Opposites,
        ),
        (
            "How do I raise my credit limit?",
            "How do I lower my credit limit?",
            Refusal::Opposites,
        ),
        (
            "How do I mount a USB drive?",
            "How do I unmount a USB drive?",
            Refusal::Opposites,
        ),
        (
            "Which foods should I eat before surgery?",
            "Which foods shouldn't I eat before surgery?",
            Refusal::Negation,
        ),
        (
            "Who wrote the Odyssey?",
            "When was the Odyssey written?",
            Refusal::QuestionWord,
        ),
        (
            "How do bees make honey?",
            "Why do bees make honey?",
            Refusal::QuestionWord,
        ),
        (
            "Suggest 5 names for a bakery",
            "Suggest 5 names for a bakery, each one a pun",
            Refusal::Added,
        ),
        (
            "How do I cook rice?",
            "How do I cook quinoa?",
            Refusal::Swapped,
        ),
        (
            "How many pounds are in a kilogram?",
            "How many kilograms are in a pound?",
            Refusal::Direction,
        ),
    ] {
        assert_eq!(close(a, b), Some(why), "{a} / {b}");
    }
}

#[test]
fn rewordings_the_old_guards_let_through_still_pass() {
    for (a, b) in [
        (
            "How do I reverse a list in Python?",
            "What's the way to reverse a Python list?",
        ),
        (
            "Can I take a power bank in checked luggage?",
            "Can I take a power bank in checked baggage?",
        ),
        (
            "Can I get a copy of my bank statement by post?",
            "Can I get a copy of my bank statment by post?",
        ),
        (
            "Is there a discount for students on train tickets?",
            "On train tickets, is there a discount for students?",
        ),
        ("Why did my bread not rise?", "Why didn't my bread rise?"),
        (
            "What does HTTP status 402 mean?",
            "What is the meaning of the HTTP 402 status?",
        ),
    ] {
        assert_eq!(close(a, b), None, "{a} / {b}");
    }
    // Many words changed: only a close embedding vouches for it.
    let (a, b) = (
        "How do I delete my Facebook account permanently?",
        "What are the steps to get rid of my Facebook profile for good?",
    );
    let reworded = Tuning::CHOSEN.reworded;
    assert_eq!(check(a, b, reworded + 0.05), None);
    assert_eq!(check(a, b, reworded - 0.05), Some(Refusal::Reworded));
}

#[test]
fn facts_stand_unless_overruled_at_their_own_bar_and_opposites_always() {
    let facts = [
        Refusal::Numbers,
        Refusal::Negation,
        Refusal::Opposites,
        Refusal::Entity,
        Refusal::Direction,
        Refusal::Form,
        Refusal::QuestionWord,
    ];
    let never = Tuning {
        facts: FactBars::NEVER,
        ..Tuning::CHOSEN
    };
    for fact in facts {
        assert_eq!(fact.firmness(), Firmness::Fact);
        assert_eq!(verifier_bar(Some(fact), false, never), None, "{fact:?}");
    }
    // Each fact guard at a bar of its own: 0.90, 0.91, ...
    let each = Tuning {
        facts: FactBars {
            numbers: 0.90,
            negation: 0.91,
            opposites: 0.92,
            entity: 0.93,
            direction: 0.94,
            form: 0.95,
            question_word: 0.96,
        },
        ..Tuning::CHOSEN
    };
    for (fact, bar) in facts
        .into_iter()
        .zip([0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96])
    {
        assert_eq!(verifier_bar(Some(fact), false, each), Some(bar), "{fact:?}");
    }
}

#[test]
fn a_form_asked_for_is_a_fact_and_one_merely_named_is_a_word() {
    for (a, b, why) in [
        (
            "Write a poem about autumn.",
            "Write a poem about autumn in French.",
            Refusal::Form,
        ),
        (
            "Summarize this report.",
            "Summarize this report as a table.",
            Refusal::Form,
        ),
        (
            "Write a haiku about the sea.",
            "Write a limerick about the sea.",
            Refusal::Form,
        ),
    ] {
        assert_eq!(close(a, b), Some(why), "{a} / {b}");
    }
    for (a, b) in [
        (
            "Are you expected to tip in restaurants in Italy?",
            "Is tipping expected at Italian restaurants?",
        ),
        (
            "Who was the first emperor of China?",
            "Which ruler was the first Chinese emperor?",
        ),
    ] {
        let found = objections(a, b);
        assert!(!found.contains(&Refusal::Form), "{a} / {b}: {found:?}");
    }
}

#[test]
fn the_same_number_in_another_unit_is_another_question() {
    for (a, b) in [
        (
            "How many meals a day should I feed a 10-week-old puppy?",
            "How many meals a day should I feed a 10-month-old puppy?",
        ),
        (
            "Roughly how many football pitches would fit on a 50-acre farm?",
            "Roughly how many football pitches would fit on a 50-hectare farm?",
        ),
        (
            "How many grams of sugar are in a cup?",
            "How many ounces of sugar are in a cup?",
        ),
        (
            "Is 100 Mbps fast enough for streaming?",
            "Is 100 MB/s fast enough for streaming?",
        ),
    ] {
        let found = objections(a, b);
        assert!(found.contains(&Refusal::Numbers), "{a} / {b}: {found:?}");
    }
    // The same unit spelled another way, or a unit on one side only, is
    // not another question.
    for (a, b) in [
        (
            "How long is a marathon in kilometres?",
            "How many km is a marathon?",
        ),
        (
            "How long does a 5 km run take a beginner?",
            "How long does a 5 kilometer run take a beginner?",
        ),
    ] {
        let found = objections(a, b);
        assert!(!found.contains(&Refusal::Numbers), "{a} / {b}: {found:?}");
    }
}

#[test]
fn another_sign_in_a_formula_is_another_question() {
    for (a, b) in [
        ("Solve x^2 - 5x + 6 = 0.", "Solve x^2 - 5x - 6 = 0."),
        ("What is 12 * 4 + 3?", "What is 12 * (4 + 3)?"),
        ("Is 2^10 > 1000?", "Is 2^10 < 1000?"),
    ] {
        let found = objections(a, b);
        assert!(found.contains(&Refusal::Numbers), "{a} / {b}: {found:?}");
    }
    // The same formula spaced or worded otherwise, a hyphenated word or a
    // date, and a formula on one side only, are not.
    for (a, b) in [
        ("Solve x^2 - 5x + 6 = 0", "Find the roots of x^2-5x+6=0."),
        (
            "How many meals a day for a 10-week-old puppy?",
            "How many meals a day should a 10-week-old puppy get?",
        ),
        (
            "When is the 2023/24 tax return due?",
            "What is the deadline for the 2023/24 tax return?",
        ),
        ("What is 7 + 5?", "What do 7 and 5 add up to?"),
    ] {
        let found = objections(a, b);
        assert!(!found.contains(&Refusal::Numbers), "{a} / {b}: {found:?}");
    }
}

#[test]
fn a_pair_refused_twice_needs_the_stricter_bar() {
    // Another number and a negation: overruling the number alone is not
    // enough.
    let (a, b) = (
        "Which 3 painkillers are safe to take with alcohol?",
        "Which 4 painkillers are not safe to take with alcohol?",
    );
    let numbers_only = Tuning {
        facts: FactBars {
            numbers: 0.95,
            ..FactBars::NEVER
        },
        ..Tuning::CHOSEN
    };
    let found = refusals(a, b, 0.9, numbers_only);
    assert!(found.contains(&Refusal::Numbers), "{found:?}");
    assert!(found.contains(&Refusal::Negation), "{found:?}");
    assert_eq!(
        check_tuned(a, b, 0.9, numbers_only),
        Some(Refusal::Negation)
    );
    assert_eq!(
        verifier_bar(check_tuned(a, b, 0.9, numbers_only), false, numbers_only),
        None
    );
    let both = Tuning {
        facts: FactBars {
            numbers: 0.95,
            negation: 0.98,
            ..FactBars::NEVER
        },
        ..Tuning::CHOSEN
    };
    assert_eq!(check_tuned(a, b, 0.9, both), Some(Refusal::Negation));
    assert_eq!(
        strictest(&[Refusal::Numbers, Refusal::Negation], both),
        Some(Refusal::Negation)
    );
    assert_eq!(
        strictest(&[Refusal::Negation, Refusal::Numbers], both),
        Some(Refusal::Negation)
    );
    assert_eq!(strictest(&[], both), None);
}

#[test]
fn word_counts_defer_to_the_verifier() {
    let tuning = Tuning::CHOSEN;
    assert_eq!(verifier_bar(None, false, tuning), Some(tuning.verified));
    assert_eq!(
        verifier_bar(Some(Refusal::Swapped), false, tuning),
        Some(tuning.overrule)
    );
    let never = Tuning {
        overrule: 1.01,
        overrule_added: 1.01,
        ..tuning
    };
    for count in [Refusal::Added, Refusal::Swapped, Refusal::Reworded] {
        assert_eq!(verifier_bar(Some(count), false, never), None);
    }
    for doubtful in [
        Refusal::SpelledNumbers,
        Refusal::QuestionSpan,
        Refusal::VerbNegation,
    ] {
        let at = Tuning {
            overrule_fact: 0.99,
            ..tuning
        };
        assert_eq!(verifier_bar(Some(doubtful), false, at), Some(0.99));
        let never = Tuning {
            overrule_fact: 1.01,
            ..tuning
        };
        assert_eq!(verifier_bar(Some(doubtful), false, never), None);
    }
    assert!(tuning.overrule > tuning.verified);
}

#[test]
fn fact_guards_in_forms_that_rewordings_take_are_doubtful() {
    for (a, b, why) in [
        (
            "Transfer £50 from my savings to my current account",
            "Move fifty pounds from savings into my current account",
            Refusal::SpelledNumbers,
        ),
        (
            "Transfer £50 from my savings to my current account",
            "Transfer £500 from my savings to my current account",
            Refusal::Numbers,
        ),
        (
            "When does the pharmacy open?",
            "How soon does the pharmacy open?",
            Refusal::QuestionSpan,
        ),
        (
            "Who wrote the Odyssey?",
            "When was the Odyssey written?",
            Refusal::QuestionWord,
        ),
        (
            "How do bees make honey?",
            "Why do bees make honey?",
            Refusal::QuestionWord,
        ),
        (
            "How do I stop avocados from browning?",
            "How do I keep avocados from turning brown?",
            Refusal::VerbNegation,
        ),
        (
            "Which foods should I eat before surgery?",
            "Which foods should I avoid before surgery?",
            Refusal::VerbNegation,
        ),
        // The verb's opposite on the other side: another question.
        (
            "How do I start the docker service?",
            "How do I stop the docker service?",
            Refusal::Negation,
        ),
        // A verb alongside a word that only negates: a fact.
        (
            "Why does my phone charge?",
            "Why doesn't my phone stop charging?",
            Refusal::Negation,
        ),
    ] {
        assert_eq!(close(a, b), Some(why), "{a} / {b}");
    }
    assert_eq!(Refusal::SpelledNumbers.firmness(), Firmness::DoubtfulFact);
    assert_eq!(Refusal::QuestionSpan.firmness(), Firmness::DoubtfulFact);
    assert_eq!(Refusal::VerbNegation.firmness(), Firmness::DoubtfulFact);
    assert_eq!(Refusal::Numbers.firmness(), Firmness::Fact);
}

#[test]
fn a_possessive_names_the_same_thing() {
    let (a, b) = (
        "What's the capital of Australia?",
        "Which city is Australia's capital?",
    );
    assert_ne!(close(a, b), Some(Refusal::Entity));
    // At MiniLM's similarity for the pair, nothing objects.
    assert_eq!(check(a, b, 0.93), None);
}

#[test]
fn paraphrases_pass() {
    for (a, b) in [
        (
            "What is the x402 protocol?",
            "Can you explain the x402 protocol?",
        ),
        ("How do I reset my password?", "how can i reset my password"),
        (
            "What's the capital of France?",
            "Tell me the capital of France",
        ),
    ] {
        assert_eq!(close(a, b), None, "{a} / {b}");
    }
}

#[test]
fn classic_false_hits_are_refused() {
    assert_eq!(
        close("Turn the alarm on", "Turn the alarm off"),
        Some(Refusal::Opposites)
    );
    assert_eq!(
        close("Sales figures for 2021", "Sales figures for 2022"),
        Some(Refusal::Numbers)
    );
    assert_eq!(
        close("Is Python slow?", "Is Python not slow?"),
        Some(Refusal::Negation)
    );
    assert_eq!(
        close("Why can't I log in?", "Why can I log in?"),
        Some(Refusal::Negation)
    );
    assert_eq!(
        close(
            "What is the capital of France?",
            "What is the capital of Spain?"
        ),
        Some(Refusal::Entity)
    );
    assert_eq!(
        close("Convert 5 USD to EUR", "Convert 5 EUR to USD"),
        Some(Refusal::Direction)
    );
    assert_eq!(
        close("How do I enable 2FA?", "How do I disable 2FA?"),
        Some(Refusal::Opposites)
    );
    assert_eq!(
        close("List the planets as JSON", "List the planets as a table"),
        Some(Refusal::Form)
    );
    assert_eq!(
        close("Explain recursion briefly", "Explain recursion in detail"),
        Some(Refusal::Form)
    );
    assert_eq!(
        close("Write the function in Python", "Write the function in Rust"),
        Some(Refusal::Form)
    );
}

#[test]
fn rewording_is_not_refused() {
    // Both pairs are above 0.94 with MiniLM; a word added or swapped
    // that close is a rewording.
    assert_eq!(
        check(
            "It supports more than 50k models.",
            "It supports over 50k models.",
            0.96
        ),
        None
    );
    assert_eq!(
        check(
            "Amazon SageMaker trains Transformer models.",
            "Amazon SageMaker can train Transformer models with Hugging Face.",
            0.95
        ),
        None
    );
}

#[test]
fn a_time_counted_in_units_asks_how_long() {
    // "How many days" is "how long" in units: the same question.
    let (a, b) = (
        "How long does cooked rice last in the fridge?",
        "How many days can cooked rice be kept in the refrigerator?",
    );
    assert_eq!(check(a, b, 0.92), None);
    let (a, b) = (
        "How long will my passport renewal take?",
        "How much time will my passport renewal take?",
    );
    // The question-word guard reads "how much time" as "how long"; the
    // three words that differ are the word count's to judge: a swap when
    // `max_swapped` allows three or more, else the cosine's (here above
    // the bar for a rewording).
    let cosine = Tuning::CHOSEN.close_enough - 0.01;
    for (max_swapped, refusal) in [(2, None), (4, Some(Refusal::Swapped))] {
        let tuning = Tuning {
            max_swapped,
            reworded: cosine - 0.05,
            ..Tuning::CHOSEN
        };
        assert_eq!(check_tuned(a, b, cosine, tuning), refusal, "{max_swapped}");
    }
    // A length, a count of times or a price is still another question.
    for (a, b) in [
        (
            "How long is the flight to Lisbon?",
            "How many miles is the flight to Lisbon?",
        ),
        (
            "How long should I brush my teeth?",
            "How many times should I brush my teeth?",
        ),
        (
            "How long does a passport renewal take?",
            "How much does a passport renewal cost?",
        ),
    ] {
        assert_eq!(check(a, b, 0.95), Some(Refusal::QuestionSpan), "{a} / {b}");
    }
}

#[test]
fn a_phrase_moved_is_not_a_swap() {
    // "check in" moves as one phrase: the same question.
    let (a, b) = ("What's the check-in time?", "What time can I check in?");
    assert_eq!(check(a, b, 0.64), None);
    // Two words trading roles are still another question.
    for (a, b) in [
        ("Is a square a rectangle?", "Is a rectangle a square?"),
        ("Convert USD to EUR", "Convert EUR to USD"),
    ] {
        assert_eq!(check(a, b, 0.95), Some(Refusal::Direction), "{a} / {b}");
    }
}

#[test]
fn the_same_words_moved_defer_at_a_bar_of_their_own() {
    // Only moved, or framed otherwise: the same content words.
    for (a, b) in [
        (
            "When is the next open day at the college?",
            "At the college, when is the next open day?",
        ),
        (
            "How do I order a new debit card?",
            "How can I order a new debit card?",
        ),
        (
            "How do I top up my pay-as-you-go SIM?",
            "How do I  top up my pay-as-you-go SIM ?",
        ),
    ] {
        assert!(same_words(a, b), "{a} / {b}");
        assert_eq!(check(a, b, 0.98), None, "{a} / {b}");
    }
    // A word added, swapped or reworded is not the same words.
    for (a, b) in [
        (
            "What are the best museums in London?",
            "What are the best free museums in London?",
        ),
        ("How do I knit a scarf?", "How do I crochet a scarf?"),
        (
            "How long does a refund take?",
            "How many days does a refund take?",
        ),
    ] {
        assert!(!same_words(a, b), "{a} / {b}");
    }
    // Nor are the same words in an order that changes what is asked: two
    // neighbours traded, persons swapped, or a direction reversed (which a
    // guard refuses too, and a refusal's bar is the refusal's).
    for (a, b) in [
        ("How is milk chocolate made?", "How is chocolate milk made?"),
        ("Can you teach me Spanish?", "Can I teach you Spanish?"),
    ] {
        assert!(!same_words(a, b), "{a} / {b}");
    }
    let (a, b) = ("Is Python faster than Java?", "Is Java faster than Python?");
    assert!(!same_words(a, b));
    let refusal = check(a, b, 0.98);
    assert_eq!(refusal, Some(Refusal::Direction));
    let tuning = Tuning::CHOSEN;
    assert_eq!(
        verifier_bar(refusal, true, tuning),
        verifier_bar(refusal, false, tuning)
    );
    assert_eq!(verifier_bar(None, true, tuning), Some(tuning.same_words));
    assert_eq!(verifier_bar(None, false, tuning), Some(tuning.verified));
    assert!(tuning.same_words <= tuning.verified);
}

#[test]
fn words_added_defer_at_a_bar_of_their_own() {
    // A rewording adds words ("Is there somewhere to park?") as an added
    // constraint does; a swapped word more often changes the subject.
    let tuning = Tuning {
        overrule_added: 0.99,
        ..Tuning::CHOSEN
    };
    for wording in [Refusal::Added, Refusal::Reworded] {
        assert_eq!(wording.firmness(), Firmness::Wording);
        assert_eq!(verifier_bar(Some(wording), false, tuning), Some(0.99));
    }
    assert_eq!(Refusal::Swapped.firmness(), Firmness::WordCount);
    assert_eq!(
        verifier_bar(Some(Refusal::Swapped), false, tuning),
        Some(tuning.overrule)
    );
    // Overruling a guard takes more confidence than a pair no guard
    // objects to.
    assert!(tuning.verified < tuning.overrule_added);
    assert!(tuning.verified < tuning.overrule);
}

#[test]
fn a_place_and_its_adjective_name_the_same_thing() {
    let (a, b) = (
        "What's the capital city of Canada?",
        "Which Canadian city is the capital?",
    );
    assert_ne!(close(a, b), Some(Refusal::Entity));
    for (x, y) in [
        ("Japan", "Japanese"),
        ("Italy", "Italian"),
        ("Germany", "German"),
        ("Israel", "Israeli"),
        ("Mexico", "Mexican"),
    ] {
        assert!(same_name(&x.to_lowercase(), &y.to_lowercase()), "{x} / {y}");
    }
    // Other places stay apart.
    for (a, b) in [
        (
            "What is the capital of Niger?",
            "What is the capital of Nigeria?",
        ),
        (
            "What is the capital of Iran?",
            "What is the capital of Iraq?",
        ),
        (
            "What is the capital of Austria?",
            "What is the Australian capital?",
        ),
    ] {
        assert_eq!(close(a, b), Some(Refusal::Entity), "{a} / {b}");
    }
}

#[test]
fn a_form_named_another_way_is_the_same_form() {
    for (a, b) in [
        (
            "How do I write a while loop in Bash?",
            "Show me a while loop in a shell script",
        ),
        ("How do I parse JSON in JavaScript?", "Parse JSON in JS"),
    ] {
        assert_ne!(close(a, b), Some(Refusal::Form), "{a} / {b}");
    }
    // Another language is still another form.
    assert_eq!(
        close(
            "How do I write a while loop in Bash?",
            "How do I write a while loop in Python?"
        ),
        Some(Refusal::Form)
    );
}

#[test]
fn the_first_person_and_a_sentence_start_are_not_names() {
    // "I" against "OK" was two names swapped.
    let (a, b) = (
        "Can I cook tomato sauce in a cast iron pan?",
        "Is it OK to simmer a tomato sauce in cast iron?",
    );
    assert_eq!(entities(a), Vec::<String>::new());
    assert_eq!(entities(b), Vec::<String>::new());
    assert_ne!(check(a, b, 0.83), Some(Refusal::Entity));
    // The word that starts a second sentence is capitalized for that.
    assert_eq!(
        entities("Hi! How do I reset my password?"),
        Vec::<String>::new()
    );
    assert_eq!(
        entities("Quick question: What does Node.js 3.5 do? Thanks, Sam"),
        vec!["node.js".to_string(), "sam".to_string()]
    );
    // Names are still names, wherever they stand, a sentence's start too.
    assert_eq!(
        entities("Quick question: France or Spain, which is bigger?"),
        vec!["france".to_string(), "spain".to_string()]
    );
    assert_eq!(
        check(
            "Hi! What is the capital of France?",
            "What is the capital of Spain?",
            0.9
        ),
        Some(Refusal::Entity)
    );
    assert_eq!(
        entities("I've moved; Is the UK office open?"),
        vec!["uk".to_string()]
    );
    // An abbreviation's full stop ends no sentence.
    assert_eq!(
        entities("Which is bigger, Paris vs. Rome?"),
        vec!["paris".to_string(), "rome".to_string()]
    );
    assert!(entities("Ask Dr. Smith").contains(&"smith".to_string()));
}

#[test]
fn words_of_opposite_polarity_ask_opposite_questions() {
    for (a, b) in [
        (
            "What helps plantar fasciitis heel pain in the morning?",
            "What makes plantar fasciitis heel pain worse in the morning?",
        ),
        (
            "Which stretches help lower back pain?",
            "Which stretches can aggravate lower back pain?",
        ),
        (
            "What can I do to improve my credit score?",
            "What can I do that will damage my credit score?",
        ),
    ] {
        assert_eq!(check(a, b, 0.95), Some(Refusal::Opposites), "{a} | {b}");
        assert_eq!(check(b, a, 0.95), Some(Refusal::Opposites), "{b} | {a}");
    }
    // One side leaning and the other neutral is a rewording, and words of
    // one polarity on both sides are not opposites.
    for (a, b) in [
        (
            "How do I stop an avocado browning?",
            "How do I keep avocados from turning brown?",
        ),
        ("What helps a sore throat?", "What relieves a sore throat?"),
    ] {
        assert_ne!(check(a, b, 0.95), Some(Refusal::Opposites), "{a} | {b}");
    }
}
