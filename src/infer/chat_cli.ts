// `lmf chat`: multi-turn chat in the terminal, streamed token by token, as LLaMA-Factory's
// `llamafactory-cli chat`: `clear` forgets the history, `exit` quits. Reads stdin line by line, so
// it also works piped.
import { createInterface } from "node:readline";
import type { Message } from "../data/types.ts";
import type { ChatModel, GenerationSettings } from "./chat_model.ts";

export async function runChatCli(chat: ChatModel, settings: GenerationSettings, output: NodeJS.WritableStream = process.stdout): Promise<void> {
  const lines = createInterface({ input: process.stdin, terminal: false });
  const history: Message[] = [];
  output.write("Welcome to lmfactory chat. Type `clear` to forget the history, `exit` to quit.\n\nUser: ");
  for await (const line of lines) {
    const query = line.trim();
    if (query === "exit") break;
    if (query === "clear") {
      history.length = 0;
      output.write("History has been removed.\n\nUser: ");
      continue;
    }
    if (!query) {
      output.write("User: ");
      continue;
    }
    history.push({ role: "user", content: query });
    output.write("Assistant: ");
    let answer = "";
    for (const piece of chat.streamChat(history, settings)) {
      output.write(piece);
      answer += piece;
    }
    history.push({ role: "assistant", content: answer });
    output.write("\n\nUser: ");
  }
  lines.close();
  output.write("\n");
}
