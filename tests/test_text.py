from tasks.text import alpaca_user_content, car_text


def test_car_text_matches_car_layout():
    msgs = [{"role": "user", "content": alpaca_user_content("List colors", "warm ones")},
            {"role": "assistant", "content": "Red, orange."}]
    meta = {"instruction": "List colors", "input": "warm ones"}
    assert car_text(msgs, meta) == "Instruction: List colors Input: warm ones Response: Red, orange."
    msgs[0]["content"] = "List colors"
    assert car_text(msgs, {}) == "Instruction: List colors Response: Red, orange."
    multi = msgs + [{"role": "user", "content": "More?"}, {"role": "assistant", "content": "Yellow."}]
    assert car_text(multi) == "User: List colors Assistant: Red, orange. User: More? Assistant: Yellow."
