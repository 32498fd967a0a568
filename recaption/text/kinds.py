"""Kinds of things that alt-text often names by a make, a breed or a pet word.

The rule-based writer must not add a classifier label that only says again what the
alt-text already says in other words: "a red Bentley" plus "with a sports car", "my puppy"
plus "with a Golden Retriever". A label's head noun catches the plain cases ("cat" in "two
cats"); this table catches the rest for the kinds where web alt-text most often uses a
proper name or a narrower word. A label of kind K counts as already said when the alt-text
has any word of K (the kind's own nouns, narrower nouns, makes and brands).

The table is deliberately small and hand-made (no WordNet ships offline); a word listed
under two kinds ("jaguar") says both, which at worst drops a label that was wrong anyway.
Words that often mean something else ("van" in "van Gogh", "rolls", "mobile", "jet black")
are left out.
"""

from __future__ import annotations

KIND_WORDS: dict[str, str] = {
    "car": (
        "car cars automobile automobiles vehicle vehicles sedan saloon coupe suv hatchback convertible roadster "
        "limo limousine minivan jeep pickup taxi cab supercar hypercar racecar "
        "audi bmw bentley bugatti buick cadillac chevrolet chevy chrysler citroen dodge ferrari fiat ford "
        "honda hyundai jaguar kia lamborghini landrover lexus maserati mazda mclaren mercedes mitsubishi "
        "nissan opel peugeot porsche renault royce skoda subaru suzuki tesla toyota volkswagen vw volvo"
    ),
    "dog": (
        "dog dogs puppy puppies pup pups doggy doggo pooch canine hound terrier retriever labrador spaniel "
        "bulldog husky corgi poodle beagle pug chihuahua dachshund rottweiler collie schnauzer "
        "setter dalmatian greyhound whippet mastiff pomeranian samoyed doberman sheepdog malamute"
    ),
    "cat": "cat cats kitten kittens kitty kitties tabby feline moggy siamese",
    "bird": (
        "bird birds chick parrot parakeet budgie owl eagle hawk falcon duck swan goose finch robin sparrow "
        "pigeon dove crow raven penguin flamingo heron stork pelican hummingbird gull seagull"
    ),
    "boat": (
        "boat boats ship ships yacht sailboat sailing vessel canoe kayak ferry schooner "
        "catamaran trimaran dinghy speedboat gondola tugboat"
    ),
    "aircraft": "plane planes airplane aeroplane aircraft airliner boeing airbus cessna",
    "bicycle": "bike bikes bicycle bicycles cycle cycling tandem tricycle unicycle",
    "motorcycle": "motorbike motorcycle motorcycles scooter moped harley ducati yamaha kawasaki vespa",
    "phone": "phone phones smartphone smartphones iphone android cellphone telephone",
    "computer": "computer computers laptop laptops macbook pc chromebook thinkpad",
}
_KIND_SETS = {kind: frozenset(words.split()) for kind, words in KIND_WORDS.items()}


def kinds_named(words: set[str]) -> set[str]:
    """The kinds that a set of lower-case words names."""
    return {kind for kind, vocab in _KIND_SETS.items() if vocab & words}
