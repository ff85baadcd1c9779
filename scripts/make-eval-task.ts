// Makes `evaluation/tinyfacts/`, a small original multiple-choice task in the folder format of
// LLaMA-Factory's evaluation sets (MMLU / C-Eval: mapping.json + dev/val/test/<subject>_<split>.csv
// with columns question,A,B,C,D,answer), from seeded templates. Each fact is asked in three
// phrasings: one goes to test, two to dev/val, so a model that learned the facts can pass the test.
// Run: node --import tsx scripts/make-eval-task.ts   (EVAL_TASK_OUT overrides the output folder)
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { seededRandom, shuffled } from "../src/torch/seeded.ts";

const OUT = process.env.EVAL_TASK_OUT ?? join(import.meta.dirname, "..", "evaluation", "tinyfacts");


const random = seededRandom(7);
const shuffle = <T>(items: readonly T[]): T[] => shuffled(items, random);

interface Fact {
  /** The three phrasings of the question. */
  questions: [string, string, string];
  correct: string;
  distractors: string[];
}

interface Subject {
  key: string;
  name: string;
  category: "STEM" | "Social Sciences" | "Humanities" | "Other";
  facts: Fact[];
}

/** Facts given as [key, answer] pairs; distractors are other facts' answers. */
function pairFacts(pairs: readonly (readonly [string, string])[], phrasings: (key: string) => [string, string, string]): Fact[] {
  const answers = pairs.map(([, answer]) => answer);
  return pairs.map(([key, answer]) => ({
    questions: phrasings(key),
    correct: answer,
    distractors: shuffle(answers.filter((other) => other !== answer)).slice(0, 3),
  }));
}

const SUMS: [number, number][] = [[2, 3], [4, 5], [1, 6], [3, 7], [5, 8], [6, 6], [2, 9], [7, 4], [8, 8], [9, 3]];

const SUBJECTS: Subject[] = [
  {
    key: "arithmetic",
    name: "simple arithmetic",
    category: "STEM",
    facts: SUMS.map(([a, b]) => {
      const sum = a + b;
      const nearby = shuffle([sum - 2, sum - 1, sum + 1, sum + 2, sum + 3].filter((n) => n > 0));
      return {
        questions: [`What is ${a} + ${b}?`, `How much is ${a} plus ${b}?`, `Add ${a} and ${b}. What do you get?`],
        correct: String(sum),
        distractors: nearby.slice(0, 3).map(String),
      };
    }),
  },
  {
    key: "world_capitals",
    name: "world capitals",
    category: "Social Sciences",
    facts: pairFacts(
      [["Paris", "France"], ["Rome", "Italy"], ["Madrid", "Spain"], ["Berlin", "Germany"], ["Tokyo", "Japan"], ["Cairo", "Egypt"], ["Lima", "Peru"], ["Oslo", "Norway"], ["Ottawa", "Canada"], ["Nairobi", "Kenya"]],
      (city) => [`In which country is ${city} the capital?`, `${city} is the capital of which country?`, `Which country has ${city} as its capital?`],
    ),
  },
  {
    key: "word_opposites",
    name: "word opposites",
    category: "Humanities",
    facts: pairFacts(
      [["hot", "cold"], ["big", "small"], ["up", "down"], ["day", "night"], ["fast", "slow"], ["happy", "sad"], ["open", "closed"], ["early", "late"], ["full", "empty"], ["light", "dark"]],
      (word) => [`What is the opposite of "${word}"?`, `Which word means the opposite of "${word}"?`, `The opposite of "${word}" is which word?`],
    ),
  },
  {
    key: "animal_sounds",
    name: "animal sounds",
    category: "Other",
    facts: pairFacts(
      [["cow", "moo"], ["dog", "woof"], ["cat", "meow"], ["owl", "hoot"], ["crow", "caw"], ["goat", "bleat"], ["horse", "neigh"], ["duck", "quack"], ["sheep", "baa"], ["lion", "roar"]],
      (animal) => [`What sound does a ${animal} make?`, `Which sound is made by a ${animal}?`, `A ${animal} says what?`],
    ),
  },
];

const LETTERS = ["A", "B", "C", "D"] as const;
const DEV_SIZE = 5;

function csvField(value: string): string {
  return /[",\n\r]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

function toCsv(rows: string[][]): string {
  return [["question", "A", "B", "C", "D", "answer"], ...rows].map((row) => row.map(csvField).join(",")).join("\n") + "\n";
}

const mapping: Record<string, { name: string; category: string }> = {};
SUBJECTS.forEach((subject, subjectIndex) => {
  mapping[subject.key] = { name: subject.name, category: subject.category };
  // Answer letters are balanced (each letter is right 10 times in 40 test questions), so always
  // answering one letter scores exactly chance.
  const extras = [LETTERS[(2 * subjectIndex) % 4]!, LETTERS[(2 * subjectIndex + 1) % 4]!];
  const answerLetters = shuffle([...LETTERS, ...LETTERS, ...extras]);
  const test: string[][] = [];
  const rest: string[][] = [];
  subject.facts.forEach((fact, factIndex) => {
    // One choice order per fact, so every phrasing of a fact has the same answer letter.
    const answer = answerLetters[factIndex]!;
    const options = shuffle(fact.distractors);
    options.splice(LETTERS.indexOf(answer), 0, fact.correct);
    const [forTest, ...forTraining] = shuffle(fact.questions);
    test.push([forTest!, ...options, answer]);
    for (const question of forTraining) rest.push([question, ...options, answer]);
  });
  const pool = shuffle(rest);
  const splits = { dev: pool.slice(0, DEV_SIZE), val: pool.slice(DEV_SIZE), test: shuffle(test) };
  for (const [split, rows] of Object.entries(splits)) {
    mkdirSync(join(OUT, split), { recursive: true });
    writeFileSync(join(OUT, split, `${subject.key}_${split}.csv`), toCsv(rows));
  }
});
writeFileSync(join(OUT, "mapping.json"), JSON.stringify(mapping, null, 2) + "\n");
